"""Scale-out across nodes: the stream directory (local, per host, in Redis), relay tokens and
ZLMediaKit's static ``origin_url`` edge mode.  Stands above core; core and the protocols never
import it.  Importing this package does not import any Redis client."""
