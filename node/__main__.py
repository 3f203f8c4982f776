"""``python -m node``: the ``supnet`` program (what the launcher starts for each node of a local tree)."""

from node.cli import main

if __name__ == "__main__":
    main()
