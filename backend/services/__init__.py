"""The service layer: what the API, the dashboard pages, the command line and the job runner
share (one options mapping, the job state machine, assessments, uploads, result files, model
hosts). Routes and pages stay thin and call these.
"""
