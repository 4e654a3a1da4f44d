"""A run, below both training and inference: its configuration (`config`), its directory
(`workdir`: layout, lock, loading, parameters restored and averaged), its checkpoints
(`checkpoint`), the data it names (`task_data`), the devices it uses (`mesh`) and how it stops
on a signal (`stopping`). Training writes runs; inference, evaluation, export and serving read
them, through this layer alone."""
