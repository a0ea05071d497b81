"""``python -m quantart_cli`` runs the CLI (and is what ``torchrun -m quantart_cli`` launches)."""

from quantart_cli.shell.entry import main

if __name__ == "__main__":
    main()
