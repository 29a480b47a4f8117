"""The built-in synthetic sign-language corpus: procedurally rendered signers signing sentences."""
