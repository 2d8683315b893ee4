"""The AWS Step Functions backend: `shape` (how the step graph nests into Parallels), `asl` (the
state machine), `cfn` (its CloudFormation template), `limits` (AWS's size limits, checked at
compile time), `backend` (emit), `deploy` (change sets), `callback` (the task-token wrapper run in
containers)."""
