"""Landmark backends (dlib, face-alignment FAN, user file), all behind `nvsvideo.face.landmarks.LandmarkBackend`.

Backends import the shared types from `nvsvideo.face.types`, never from `nvsvideo.face.landmarks`,
which imports the backends.
"""
