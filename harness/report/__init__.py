"""Tables, plots and the static site from a results store, each number with its uncertainty."""
