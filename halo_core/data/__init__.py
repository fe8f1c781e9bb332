"""Survey stamps to training shards: the paired-stamp contract, the filter, splits by brick, preprocessing, samples and batches (the `data` asset group)."""
