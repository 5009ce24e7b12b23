"""Meta-reinforcement learning (Finn et al. 2017, section 5.3): Gaussian policies adapted by
one policy-gradient step on a few rollouts, meta-trained with TRPO through that step."""
