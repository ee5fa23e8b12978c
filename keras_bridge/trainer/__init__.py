"""Lightning plumbing: making or borrowing the Trainer that runs each Keras call."""
