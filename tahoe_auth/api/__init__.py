"""gRPC servicers (proto <-> use case, nothing else), interceptors and error mapping."""
