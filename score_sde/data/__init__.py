"""Building blocks of `score_sde.data.datasets`: file readers and dataset classes (`readers`) and the
resumable, shardable batch iterator (`loader`). Import the public API from `score_sde.data.datasets`."""
