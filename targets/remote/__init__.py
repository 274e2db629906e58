"""What the remote targets (jetson-*, ssh://) share: the SSH transport and the script run on the remote CPU."""
