"""The domain: which conversations a window holds, and what may leave the provider.

- :mod:`~airflow_provider_auralytik.conversations.window`: the half-open ``createdAt`` window, instants,
  slices and the run's data interval; the package's one ``UTC`` and one ISO 8601 parser (``read_iso8601``).
- :mod:`~airflow_provider_auralytik.conversations.listing`: every conversation of a window, exactly,
  without trusting the server's counts; the page-size rule (``MAX_PAGE_SIZE``, ``check_page_size``).
- :mod:`~airflow_provider_auralytik.conversations.sansio`: the sans-I/O protocol the listing and the
  check speak (they say which request to send, a driver sends it), its drivers, and
  ``ConversationsApi``, what the domain needs from a hook (it never imports one).
- :mod:`~airflow_provider_auralytik.conversations.completed_check`: are a window's (or some ids')
  conversations completed? Shared by the sensor (sync) and the trigger (async).
- :mod:`~airflow_provider_auralytik.conversations.pii`: the guard that masks or refuses phone numbers
  and e-mail addresses left in masked messages.

Nothing here sends a request or writes a file; the hook and the operators do.
"""
