"""Landmark backends (dlib, face-alignment FAN, user file), all behind `nvsvideo.face.landmarks.LandmarkBackend`."""
