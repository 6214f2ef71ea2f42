"""Drop-in tests: official module layout, install(), the launcher, type parity."""
