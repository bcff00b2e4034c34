"""ASR with word timestamps: engines behind one interface, offline model resolution, corpus runs."""
