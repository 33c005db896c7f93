"""``python -m xpuruntime``: the same as the ``xpuruntime`` command."""

from xpuruntime.cli import main

if __name__ == "__main__":
    main()
