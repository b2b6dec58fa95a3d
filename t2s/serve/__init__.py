"""Serving a configured pipeline behind an API and a demo page (`t2s serve`). Reserved; lands with the serving issue."""
