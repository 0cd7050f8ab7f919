"""End to end: N synthetic 1 mm scans assessed with the paper's 3D-CNN at 2 mm, stage by stage.

Writes N scans like the real T1s (182 x 218 x 182 int16, 1 mm; seeded from ``../shared/data/real-t1``
when present, each with its own noise and intensity scale), a manifest (half members) and the
paper's 3D-CNN (random weights, sidecar: 91 x 109 x 91 at 2 mm, z-scored). Then, with 1 and with 2
data-loader worker processes, on a fresh conformed-volume cache each time:

  decode cold   every scan read, conformed to 2 mm and cached, by the loader alone (in batches of
                ``--decode-batch-size``, 2: a few scans split evenly between the workers);
  decode warm   the same from the cache;
  features      the assessment's feature extraction (white-box, the fastest exact method; scans
                from the warm cache, decoded by the workers while the model computes);
  attacks       the paper's attacks and the quantile attacks on the feature table;
  report        verdict and report.

The model runs in this process (a job runs it in the confined host, which adds one copy of each
batch). With ``--shard-processes 1,2`` it then times the feature extraction split into shards of
``--shard-scans`` taken by 1 and by 2 worker processes (spawned and warm, each with the model
loaded and ``cores / processes`` torch threads, as ``brainmia worker`` processes taking the shard
tasks of one assessment; scans from the warm cache) and prints ``ratio_two_processes_to_one=``. The
last line is ``ratio_two_workers_to_one=X ratio_decode_to_features=Y``: X the cold
decode time with 2 workers over that with 1 (target <= 0.6 where 2 cores are free), Y the cold
decode time with 2 workers over the features time.

Usage: python benchmarks/assessment.py [--scans 20] [--device cpu|cuda] [--batch-size 8] [--workers 1,2]
       [--shard-processes 1,2] [--shard-scans 5] [--decode-only]
"""

if __name__ == "__main__":  # everything is imported here, not at the top: see assessment_stages
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from assessment_stages import main

    main()
