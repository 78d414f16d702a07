"""The vocabulary every stage shares: argument checks, safe casts, ragged normalisation and
lazy exports. Private: nothing here is part of the public API, and nothing here imports
TensorFlow or Keras."""
