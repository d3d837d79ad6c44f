"""Console-script entry point: patch for gevent before anything else loads."""


def main() -> int:
    from gevent import monkey

    monkey.patch_all()
    from jmapmono.cli import main as cli_main

    return cli_main()
