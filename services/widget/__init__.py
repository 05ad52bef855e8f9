"""The credits widget and the customer's credits page it makes (/credits, /widget.js, /widget.css), with their
static files."""
