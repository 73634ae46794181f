"""Scale-up on one host: ``general.workers = N`` worker processes behind one master.

The master (:mod:`~mediasrv.workers.supervisor`) owns the listening sockets and supervises
the workers; the control channel (:mod:`~mediasrv.workers.control`, AMP over a unix socket
pair per worker) carries the host directory (:mod:`~mediasrv.workers.master` in the master,
:mod:`~mediasrv.workers.hostdir` in the worker) and the fan-out of admin calls.  Stands
above core; core and the protocols never import it."""
