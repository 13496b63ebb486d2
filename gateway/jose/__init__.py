"""Pure, synchronous JOSE core on `cryptography`: parsing, keys, algorithms, claims. Imports nothing of the gateway."""
