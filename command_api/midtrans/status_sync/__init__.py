"""The Midtrans status sync: asks the status API about payments whose notification is late (see ``worker``)."""
