"""The Kafka side: bounded reads from explicit offsets, decoding to Arrow, admin look-ups."""
