

def append_json_lines(path, records) -> None:
  """Appends each record of ``records`` to ``path`` as one JSON line (the results files' format)."""
  import json  # pylint: disable=import-outside-toplevel
  with open(path, "a", encoding="utf-8") as f:
    for record in records:
      f.write(json.dumps(record) + "\n")
