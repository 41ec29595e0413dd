"""Every way bytes travel between a bundle and tensors.

Internal, no stability guarantee. ``saving.py`` and ``restoring.py`` decide
which value goes where; ``BundleReader`` and ``BundleWriter`` look entries up,
validate them and read or write payloads; this package moves each value's
bytes between the files and torch tensors::

    restore: plain host tensors and optimizer slots located in a batch
                               -> InPlaceReads (in_place.py): BundleReader.read_at by
                                  address, or read_many_into of buffer views
      BundleValue (values.py), one value as an adapter sees it
      host tensor, in place    -> queued for the pass's one BundleReader.read_many_into
      GPU tensor               -> staging.read_to_device: file -> pinned buffer -> device
      DTensor, sliced entry    -> boxes.copy_into / dtensor_like
                                    -> format.boxes.read_box, the one box read
      values to decode         -> BundleReader.read_array
                                    (sliced: format.boxes.reassemble -> the same box read)
    save: add_tensors (host.py)
      host tensors             -> BundleWriter.add_many_at, by address (add_many of
                                  buffer views where the C accelerator is missing)
      GPU tensors              -> staging.device_chunks -> BundleWriter.add_chunks

Modules: ``values`` (:class:`BundleValue`), ``host`` (writing tensors),
``in_place`` (located payloads into host tensors), ``staging`` (the pinned GPU
staging buffers), ``boxes`` (DTensor chunks and sliced entries, on
:mod:`torchckpt.format.boxes`).

Import names from the modules, not from this package: ``boxes`` and
``values`` import ``torchckpt.distributed``, whose save path imports ``host``,
so this package imports nothing itself and either side may be imported first.
"""
