"""Images become views: readers for every data format, latent arrays, augmentation,
and the counter-based random numbers behind each view."""
