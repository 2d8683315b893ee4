"""The AWS Step Functions backend: `asl` (the state machine), `cfn` (its CloudFormation template),
`backend` (emit), `deploy` (change sets), `callback` (the task-token wrapper run in containers)."""
