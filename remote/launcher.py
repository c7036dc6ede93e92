"""The `remotectl` console script's first stop.

`remotectl proxy NAME` is the ProxyCommand of a followed host, so ssh starts it for every
connection: it goes straight to remote/client/proxy.py, without click and the command
registry (tens of milliseconds saved per connection; see scripts/bench_connect.py).
Everything else goes to the click CLI in remote/cli.
"""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["proxy"]:
        from remote.client.proxy import main as proxy_main

        sys.exit(proxy_main(sys.argv[2:]))
    from remote.cli import main as cli_main

    cli_main()


if __name__ == "__main__":
    main()
