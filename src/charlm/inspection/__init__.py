"""Looking inside a trained model: what it expects, where its bits go, and its hidden units."""
