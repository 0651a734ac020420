"""Storage adapters: SQLAlchemy models and repositories, Redis and in-process stores."""
