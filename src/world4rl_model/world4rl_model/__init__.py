"""The learning core: datasets, the diffusion world model, the reward classifier, training. ROS-free."""
