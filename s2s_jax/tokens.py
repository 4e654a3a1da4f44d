"""The special token ids that every vocabulary, the model and the decoders share."""

PAD, BOS, EOS, UNK = 0, 1, 2, 3
SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # their texts, in id order
