"""The mathematics: forward SDEs and their discrete chains, the network-output conventions and
the score-function protocol, closed-form Gaussian answers, the probability-flow ODE and the
likelihood, the variational bound, guidance."""
