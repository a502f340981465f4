"""Using trained networks from elsewhere: converters for other frameworks' weight files."""
