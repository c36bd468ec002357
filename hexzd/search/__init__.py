"""Batched MCTS (`Search`) and the player that searches a batch of games (`Player`)."""
