"""The domain: which conversations a window holds, and what may leave the provider.

- :mod:`~airflow_provider_auralytik.conversations.window`: the half-open ``createdAt`` window, instants,
  slices and the run's data interval.
- :mod:`~airflow_provider_auralytik.conversations.listing`: every conversation of a window, exactly,
  without trusting the server's counts (sans-IO: it says which request to send, the caller sends it).
- :mod:`~airflow_provider_auralytik.conversations.completed_check`: are a window's (or some ids')
  conversations completed? Shared by the sensor (sync) and the trigger (async).
- :mod:`~airflow_provider_auralytik.conversations.pii`: the guard that masks or refuses phone numbers
  and e-mail addresses left in masked messages.

Nothing here sends a request or writes a file; the hook and the operators do.
"""
