"""The maths: pure functions over explicit parameter pytrees and PRNG keys, no I/O.

cells (tanh RNN, GRU, LSTM) -> scan (one `run` over a cell or any step function, with the
implementation a choice: autodiff, loop oracle, fused, hoisted) -> rnn (stacked, bidirectional
layers) -> attention -> model (encoder, decoder, teacher-forced forward, log P(y | x)) ->
decoding (greedy, sampling, beam search); family holds the book's other RNNs, interop loads
torch weights.
"""
