"""The ledger's rules: pure Python, no I/O. The processor loads a Book, applies commands, saves the Book."""
