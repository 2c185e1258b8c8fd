"""What a token dataset is: the example schema (`schema`), the shard files and their writer (`shards`), the
dataset-level metadata (`dataset_info`), and synthetic datasets of random codes (`synthetic`).

The tokenization job (`data_pipeline`) writes token datasets with these modules; the data loaders
(`audiopalm.data`) and the vocabulary (`audiopalm.vocab`) read them.
"""
