"""The federated room: many clients, one server, rounds (``kdexp federated=<preset>``).

* ``settings``: the ``federated`` config, checked (errors name the key).
* ``split``: the public (unlabelled) set and each client's private shard, a seeded Dirichlet(α)
  over labels or IID; the clients' class histograms.
* ``local``: plain torch loops a client or the server trains with (a method module's own loss).
* ``wire``: what crosses the network, as named tensors, and its size in bytes.
* ``algorithms``: each federated method's server and client steps (ALGORITHMS, keyed by the
  method's ``federated.algorithm`` declaration).
* ``experiment``: what every process of a run builds alike from the config (data, split, models).
* ``engines``: the local engine (clients one after another, resumable) and the Flower engine
  (the same client and server functions as a Flower ClientApp and ServerApp).

The run layer's kdexp.runner.federated reads the config, runs an engine and writes the results.
"""
