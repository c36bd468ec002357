"""How strong a network is: statistics, SPRT, ratings, openings, duels, perfect play."""
