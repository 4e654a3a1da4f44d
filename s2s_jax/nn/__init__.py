"""The maths: pure functions over explicit parameter pytrees and PRNG keys, no I/O.

cells (tanh RNN, GRU, LSTM) -> rnn (the reference `lax.scan` runner, stacks, bidirectional
layers), fused and hoisted (the same scans with hand-written backward passes) -> attention ->
model (encoder, decoder, teacher-forced forward, log P(y | x)) -> decoding (greedy, sampling,
beam search); family holds the book's other RNNs, interop loads torch weights.
"""
