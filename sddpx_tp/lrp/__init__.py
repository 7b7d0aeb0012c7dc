"""Layer-wise relevance propagation: canonizers, architecture records, the relevance engines,
and LRP relevance as a torch-pruning importance. Imports only the package's ground floor."""
