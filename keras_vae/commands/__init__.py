"""The library commands of ``keras-vae``: ``train``, ``evaluate`` and ``export`` (each ``main(argv)``)."""
