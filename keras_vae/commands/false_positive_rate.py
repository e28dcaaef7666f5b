"""The false-positive-rate options that set an anomaly threshold, shared by export and score."""


def resolve_false_positive_rate(parser, args, fpr_name, percentile_name):
    """Checks ``args.<fpr_name>`` and fills it in from ``args.<percentile_name>`` (99 -> 0.01).

    A bad value ends the command through ``parser.error`` with the flag's name.
    """
    fpr_flag, percentile_flag = (f"--{name.replace('_', '-')}" for name in (fpr_name, percentile_name))
    percentile = getattr(args, percentile_name)
    if percentile is not None:
        if not 0 < percentile <= 100:
            parser.error(f"{percentile_flag} must be in (0, 100]")
        setattr(args, fpr_name, 1.0 - percentile / 100.0)
    fpr = getattr(args, fpr_name)
    if fpr is not None and not 0 <= fpr < 1:
        parser.error(f"{fpr_flag} must be in [0, 1)")
