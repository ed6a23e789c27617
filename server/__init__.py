"""stockgate.server: the gRPC service (Reservations, Inventory, Watch, health, reflection)
over the engine, on grpc.aio and uvloop. `stockgate serve` runs `app.main()`.

    from stockgate.server import Config, Server, ServerThread
"""

from .app import Server, ServerThread, main
from .config import Config, ConfigError, TokenGrant

__all__ = ["Config", "ConfigError", "Server", "ServerThread", "TokenGrant", "main"]
