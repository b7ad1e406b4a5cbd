"""``python -m vit_rope.bench``."""

from vit_rope.bench.cli import main

if __name__ == "__main__":
    main()
