"""``make bench``: podmigrate's live migration measured against the raw CRIU floor, in one run.

* ``bench.stats``     pure numbers: medians, ratios, stages, ceiling and goal arithmetic, Prometheus text
* ``bench.report``    pure rendering: the tables, the summary line, the JSON document
* ``bench.history``   ``bench/history.jsonl``: one record per row per run, the per-row history tables, README.md's block
* ``bench.floor``     a plain CRIU dump + restore of the same app, without Kubernetes, registry or images
* ``bench.ceiling``   the local registry's push (1 and 4 streams) and GET rates with a raw client
* ``bench.migration`` the app as a pod on the local cluster, moved by a PodMigration
* ``bench.drain``     N small pods moved off node-1 by one NodeDrain, K at a time
* ``bench.__main__``  brings a cluster up (instance 5), runs every size, prints, records, tears everything down
"""
