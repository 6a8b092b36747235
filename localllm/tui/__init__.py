"""The Textual app. Panes call the task layer; none imports a backend library."""
